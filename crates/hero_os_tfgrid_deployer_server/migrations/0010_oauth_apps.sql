-- The OAuth apps this deployer made on Forge, by Forge's id: the only apps it adopts, rotates or deletes. Why not
-- the name: a second deployer on the same Forge admin account (staging beside production) names its apps the same
-- way and numbers its users from 1 too, so `reconcile --fix` took the other's live apps for orphans and deleted
-- them (and its own user's client secret with the same id), and `register_sso` could adopt the other's app.
-- Existing rows: every app id a job recorded in its context.
CREATE TABLE oauth_apps (
    app_id     INTEGER PRIMARY KEY,
    user_id    INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
INSERT OR IGNORE INTO oauth_apps(app_id, user_id, created_at)
    SELECT json_extract(context_json, '$.oauth_app_id'), user_id, created_at_ms / 1000 FROM jobs
    WHERE json_extract(context_json, '$.oauth_app_id') IS NOT NULL;
