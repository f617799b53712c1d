"""Watching and driving a trained world model (issue 18).

- load: :func:`load_world`, the one place a viewer builds models from a phase-1/2/3 checkpoint.
- frames: decoding latents to frames, side-by-side panels with captions, PNG bytes.
- video: real vs open-loop vs imagined clips, MP4 files, animated GIFs for TensorBoard, and
  :func:`phase_video`, the hook each phase script calls at its end.
- keys: keyboard maps for an action space (Crafter, Minecraft, any discrete space) and action names.
- session / server: the play page (``python -m dreamer.play``): one decision per key press on a
  KV-cached rollout, served by the standard library's http.server.
"""
