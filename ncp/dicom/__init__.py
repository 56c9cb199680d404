"""DICOM pieces shared by the roles: UIDs, multipart, media negotiation, KOS manifests."""
