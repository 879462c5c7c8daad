"""The end of the data flow: window logits → answers (``decode``) → scores (``metrics``, on the CMRC
segmentation of ``segmentation``) and leaderboard files (``submit``); ``oracle`` and ``baselines``
are the ceiling and the floor."""
