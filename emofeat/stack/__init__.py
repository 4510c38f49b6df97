"""Stacking: meta-learners over feature stores.

``level1`` aligns stores by id (:class:`~emofeat.stack.level1.Level1`); ``features`` turns them
into the meta-learner's design matrix (:class:`~emofeat.stack.features.StoreFeatures`, inside
every fitted stack); ``meta`` holds the meta-learners (scikit-learn estimators) and their
registry; ``ensemble`` ties them together for ``emofeat stack`` / ``predict`` (fit, evaluate,
write); ``evaluate`` computes metrics and ``report`` renders them; ``mixer`` is the pooled-mixer's
torch module. Fusion models that train on stores and write a store (MMM) are base models:
:mod:`emofeat.fuse.run`.
"""
