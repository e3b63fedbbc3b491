-- Expiry (issue 14): when the server decommissions a VM (unix seconds; NULL: never), and when it
-- warned that the time is near (NULL: not yet; cleared when the expiry moves).
ALTER TABLE vms ADD COLUMN expires_at INTEGER;
ALTER TABLE vms ADD COLUMN expiry_warned_at INTEGER;
