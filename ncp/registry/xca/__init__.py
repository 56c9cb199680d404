"""XCA / XCA-I for architecture B: each region a community (Responding Gateway), NCP-A's Initiating Gateway
in front of them all behind one MHD Document Responder (docs/xca.md)."""
