"""The pipeline: the four phases and what runs them (docs/design.md §1).

- :mod:`.runner`: the one skeleton of every phase command (command line, resume, diagnostics, the training loop
  with its guard, logging, held-out evaluation and periodic checkpoints, the final payload, the video). The only
  place that resumes or writes a periodic checkpoint.
- :mod:`.phase0` … :mod:`.phase3`: one module per phase, saying only what is its own (build, the loss of a batch,
  its held-out evaluation, its finish). ``train_phase0_tokenizer.py`` … ``train_phase3.py`` are
  ``run_phase(PhaseN, …)``.
- :mod:`.cli`: the command line (``--config`` presets, ``--set`` overrides) into the run's ``Config``.
- :mod:`.data`: the frozen tokenizer and an up-to-date latent cache (collecting episodes when asked).
- :mod:`.build`: each model built once, from the config and the cache (dynamics, agent).
- :mod:`.checkpoints`: the file names of the phases' checkpoints, the handoff from one phase to the
  next, and the final save (checkpoint files themselves: :mod:`dreamer.training.checkpoint`).
- :mod:`.evaluate`: the real-env evaluation that ends phases 2 and 3.

The config reaches a phase through one channel, its Runtime (``rt.cfg``). The library packages below
(``tokenizer``, ``data``, ``envs``, ``dynamics``, ``agent``, ``imagination``, ``training``) never
import from here.
"""
