-- Argo CD health of a patchbay Connector or ClusterConnector (patchbay.dev/Connector,
-- patchbay.dev/ClusterConnector): its Ready condition for the generation the operator
-- has seen. True is Healthy, False is Degraded; no status yet, Unknown, or a newer
-- generation than the status describes is Progressing.
-- Only Lua's base and table libraries are open in argocd-cm scripts: no string.*.
local hs = {}

local status = obj.status
local ready = nil
if status ~= nil and status.conditions ~= nil then
  for _, condition in ipairs(status.conditions) do
    if condition.type == "Ready" then
      ready = condition
    end
  end
end

-- before the operator writes, the API server shows observedGeneration 0
if ready == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to check the definition"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil
    and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "generation " .. generation .. " not checked yet (status describes " .. status.observedGeneration .. ")"
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
elseif ready.status == "False" then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
end
hs.message = tostring(ready.reason)
if ready.message ~= nil and ready.message ~= "" then
  hs.message = hs.message .. ": " .. ready.message
end
return hs
