"""The recognition engine: plain PyTorch, no Django.

Data (``data``), networks (``nets``), augmentation, the trainer, evaluation, the checkpoint format,
preprocessing, train-to-checkpoint (``job``) and plots. The Django apps build on it; it imports none
of them.
"""
