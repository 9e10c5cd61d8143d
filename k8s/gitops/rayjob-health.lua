-- Argo CD health check for KubeRay RayJob (ray.io/v1), KubeRay v1.7.0 status fields.
-- Install: argocd-cm key `resource.customizations.health.ray.io_RayJob` (see argocd-cm-patch.yaml).
-- Progressing while the cluster starts and the job runs (message shows progress), Healthy when the
-- job SUCCEEDED, Degraded when it failed, Suspended while suspended (e.g. queued by Kueue).
local hs = {}
hs.status = "Progressing"
hs.message = "Waiting for the KubeRay operator"
if obj.status == nil then
  return hs
end
local st = obj.status
local deployment = st.jobDeploymentStatus or ""
local job = st.jobStatus or ""
local function describe(prefix)
  local parts = { prefix }
  if job ~= "" then table.insert(parts, "job " .. job) end
  if st.rayClusterName ~= nil and st.rayClusterName ~= "" then table.insert(parts, "cluster " .. st.rayClusterName) end
  if st.failed ~= nil and st.failed > 0 then table.insert(parts, "failed attempts " .. tostring(st.failed)) end
  local msg = table.concat(parts, ", ")
  if st.reason ~= nil and st.reason ~= "" then msg = msg .. " (" .. st.reason .. ")" end
  if st.message ~= nil and st.message ~= "" then msg = msg .. ": " .. st.message end
  return msg
end
if deployment == "Complete" then
  if job == "SUCCEEDED" then
    hs.status = "Healthy"
  else
    hs.status = "Degraded"
  end
  hs.message = describe("Complete")
elseif deployment == "Failed" or deployment == "ValidationFailed" then
  hs.status = "Degraded"
  hs.message = describe(deployment)
elseif deployment == "Suspended" then
  hs.status = "Suspended"
  hs.message = describe("Suspended")
elseif deployment == "" then
  hs.message = describe("New")
else
  -- Initializing, Running, Retrying, Suspending, Waiting
  hs.status = "Progressing"
  hs.message = describe(deployment)
end
return hs
