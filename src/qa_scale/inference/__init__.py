"""Stage 3: a trained reader × windows → logits. ``forward`` shards the forward passes over the
ranks; ``predict`` is the command; ``logits_store`` keeps one model's logits on disk for ensembling."""
