"""Data: LibriSpeech + CHiME-3 JND manifests, NISQA MOS manifests, mixing and loaders."""
