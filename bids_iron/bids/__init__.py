"""BIDS input discovery and loading, and BIDS-Derivatives output (naming, atomic writes)."""
