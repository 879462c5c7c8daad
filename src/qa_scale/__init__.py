"""qa-scale: train, ensemble and submit large Chinese extractive question-answering models.

Data flow, one module per stage: ``data`` (raw files → examples) → ``windows`` (examples →
model inputs with offsets and labels; ``window_store`` keeps them on disk) → ``decode``
(window logits → answers) → ``metrics`` (EM/F1) and ``submit`` (leaderboard files).
"""

__version__ = "0.1.0"
