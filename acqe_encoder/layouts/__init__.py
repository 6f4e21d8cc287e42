"""Model layouts the encoder recognises (key names, shapes, diffusers configs)."""
