"""The composition root: the one place that picks implementations and builds an engine.

``usina run``, ``usina k8s render`` and ``usina server`` all build their stores, backend and
engine here (``components``), and find backends by name in the ``usina.backends`` entry-point
group (``backends``), so a third-party backend installs as a package.
"""
