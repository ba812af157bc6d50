"""The names of the implausibility scores and of the precisions they compute in (byorn/scoring.py
computes them): a command checks an option against them before torch loads."""

VARIANTS = ("mean_nll", "max_token_nll", "relative_to_greedy", "image_ablated", "image_contradiction",
            "token_surprise", "shared_answer")
Z_SCALED = ("shared_answer",)  # variants whose values are already in MAD units of their data set
PRECISIONS = ("auto", "float32", "bfloat16")
