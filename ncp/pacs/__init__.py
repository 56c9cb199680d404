"""pacs role."""
