"""Bring-your-own-model: uploaded archives, their manifests, validation and variants."""
