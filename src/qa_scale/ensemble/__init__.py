"""Stage 4: several logits stores → one answer set. ``rules`` (what is averaged), ``combine``
(the streamed weighted mean), ``spec`` (ensemble recipes), ``weight_search`` (weights on dev),
``selection`` (greedy ensemble selection on dev), ``run`` (the ``qa-scale ensemble`` job), and
``distill`` (the ensemble as a teacher of one student reader, trained by the training engine)."""
