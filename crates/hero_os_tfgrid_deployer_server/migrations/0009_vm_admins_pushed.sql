-- The admin list `configure_sso` last wrote into this VM's SSO edge (the list as the deployer held it, sorted,
-- comma-joined; "," for nobody), recorded when the job that wrote it succeeded. The access sweep compares it with
-- the list the deployer holds now and syncs a VM that differs: before, a name taken off the list kept opening
-- every VM deployed while it was on it. Existing rows: unknown (NULL), so the first sweep syncs them once.
ALTER TABLE vms ADD COLUMN admins_pushed TEXT;
