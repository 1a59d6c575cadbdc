"""Training and evaluation of paella-mini on the shapes world."""
