-- The health watch (issue 14): what the last probe of a ready VM's public /health saw. On the VM
-- row, so every reader of a VM gets it without a join; NULL until the first probe. Probes do not
-- touch updated_at (that is the record's, not the watch's).
ALTER TABLE vms ADD COLUMN health_state TEXT;           -- 'healthy' | 'unreachable'
ALTER TABLE vms ADD COLUMN health_since INTEGER;        -- since when in health_state
ALTER TABLE vms ADD COLUMN health_checked_at INTEGER;   -- the last probe
ALTER TABLE vms ADD COLUMN last_healthy_at INTEGER;     -- the last probe that answered 200
ALTER TABLE vms ADD COLUMN health_error TEXT;           -- why the last probe failed
