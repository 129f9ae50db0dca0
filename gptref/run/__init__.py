"""A training run on disk, around the core's ``train``:

- ``config``: ``RunConfig``, every setting of a run, typed and validated once;
- ``checkpoint`` / ``snapshots``: one checkpoint's files and their verification, and a
  checkpoint directory's snapshots (atomic replace, LATEST pointer);
- ``resume``: ``train`` with checkpoints: saving a ``TrainState`` and resuming it exactly;
- ``rundir``: a run directory (config.json, metrics.jsonl, the lock), ``load_model``;
- ``pretrained``: ``load_model(path)``, the trained model from any folder of a run;
- ``loaders``: a run's device and loaders; ``plot``: the book's loss figure;
- ``job``: ``train_run``, the job behind ``gptref train``.
"""
