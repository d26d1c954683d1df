"""Token-level language-model knowledge: divergences between next-token distributions at every position."""
