-- Redeploy (issue 14): the service profile a VM runs. A provision records the profile it pushed;
-- a successful redeploy records its new one, so a later repair pushes what the VM runs now, not
-- what it was first given. Older rows take the profile their provision job asked for (NULL: the
-- server's default profile).
ALTER TABLE vms ADD COLUMN profile TEXT;
UPDATE vms SET profile = (SELECT json_extract(jobs.options_json, '$.profile') FROM jobs WHERE jobs.job_id = vms.job_id);
