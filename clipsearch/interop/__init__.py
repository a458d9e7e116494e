"""Work in and out in bulk: batch queries from a CSV (batch.py), vectors to and from
.npz/.npy files and clip-retrieval's output (vectors.py)."""
