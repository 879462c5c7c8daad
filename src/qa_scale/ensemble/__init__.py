"""Stage 4: several logits stores → one answer set. ``rules`` (what is averaged), ``combine``
(the streamed weighted mean), ``spec`` (ensemble recipes), ``weight_search`` (weights on dev),
``run`` (the ``qa-scale ensemble`` job)."""
