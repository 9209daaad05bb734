"""The demo behind ``python -m gbopt``: built-in problems, the race, and its command line.

Kept apart from the library: ``import gbopt`` imports nothing from here, and so no plotting
or data library. ``problems`` holds the problems (surfaces from the literature, a
quadratic, logistic regression, the digits MLP), ``race`` runs optimizers on them, and
``main`` is the command line; ``charlm`` is a character-level transformer language
model on the standard library's own source files (no download).
"""
