"""Folders as content-addressed packs: walk, pack, read back and extract safely."""
