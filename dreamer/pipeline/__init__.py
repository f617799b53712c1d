"""The hallway between the phases: what every phase script does around its own training loop.

- :mod:`.cli`: the command line (``--config`` presets, ``--set`` overrides) into the run's ``Config``.
- :mod:`.data`: the frozen tokenizer and an up-to-date latent cache (collecting episodes when asked).
- :mod:`.build`: each model built once, from the config and the cache (dynamics, agent).
- :mod:`.checkpoints`: the file names of the phases' checkpoints, the handoff from one phase to the
  next, and the final save.
- :mod:`.evaluate`: the real-env evaluation that ends phases 2 and 3.

A phase script reads ``prepare → build → train loop → finish`` with these. The library packages below
(``tokenizer``, ``data``, ``envs``, ``dynamics``, ``agent``, ``imagination``, ``training``) never
import from here.
"""
