"""Data-source definitions: STAC sources (``sources/*.yaml``) and collection band maps (``collections/*.yaml``)."""
