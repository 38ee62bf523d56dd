"""Event sources and decoders: raw records in, ChangeEvent / FalcoAlert out."""
