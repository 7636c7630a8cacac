"""The demo: the whole dynviz chain on synthetic data (train, record, analyze, extract, retrain,
compare, report), as ``dynviz demo`` runs it.

:func:`dynviz.demo.chain.run_chain` puts the parts together: :mod:`~dynviz.demo.settings` (sizes
and presets), :mod:`~dynviz.demo.workspace` (the run's folder, trainings and model files),
:mod:`~dynviz.demo.steps` (the step table), :mod:`~dynviz.demo.scheduler` (the job scheduler) and
:mod:`~dynviz.demo.report` (``demo.json`` and ``report.md``)."""
