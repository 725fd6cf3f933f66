"""Bearer tokens with scopes, stored as SHA-256 digests."""
