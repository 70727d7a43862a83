"""The recognition engine: plain PyTorch, no Django.

Data (``data``), networks (``nets``), augmentation with writing habits (``augment``), the trainer,
evaluation, calibration (``calibration``), how a checkpoint's probabilities are served (``serving``:
its temperature and test-time views), the checkpoint format, preprocessing, train-to-checkpoint
(``job``) and plots. The Django apps build on it; it imports none of them.
"""
