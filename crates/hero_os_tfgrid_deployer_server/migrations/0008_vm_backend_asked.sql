-- Whether any job that deployed this VM row ever asked its backend to make something (a deploy_vm or
-- deploy_gateway step that started). A later deploy of the same row replaces `job_id`, and with it went the
-- only proof that an earlier attempt had asked: a decommission after a second attempt that failed early then
-- believed the backend untouched and left whatever the first attempt made running. Sticky: never cleared.
-- Existing rows: set when any job of the same user on the same backend asked (conservative: at
-- worst a decommission asks a backend that has nothing, which answers "not found").
ALTER TABLE vms ADD COLUMN backend_asked INTEGER NOT NULL DEFAULT 0;
UPDATE vms SET backend_asked = 1 WHERE EXISTS (
  SELECT 1 FROM job_steps s JOIN jobs j ON j.job_id = s.job_id
  WHERE j.user_id = vms.user_id AND j.backend = vms.backend
    AND s.name IN ('deploy_vm', 'deploy_gateway') AND (s.attempts > 0 OR s.state != 'pending'));
