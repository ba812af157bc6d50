"""Byorn inside other training libraries (trl.py: TRL's SFTTrainer); each needs its library installed."""
