"""Stacking: level-1 matrices from feature stores, meta-learners, evaluation and reports.

``level1`` aligns stores by id; ``meta`` holds the meta-learners (scikit-learn estimators);
``evaluate`` computes metrics; ``run`` ties them together for ``emofeat stack`` / ``predict``.
"""
