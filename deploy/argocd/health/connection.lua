-- Argo CD health of a patchbay Connection (patchbay.dev/Connection).
-- Suspended while spec.suspend is true; otherwise the operator's verdict on the
-- generation it has seen: phase Ready is Healthy, Failed is Degraded, and Pending,
-- no status yet, or a newer generation than the status describes is Progressing.
-- Only Lua's base and table libraries are open in argocd-cm scripts: no string.*.
local hs = {}

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "suspended (spec.suspend is true)"
  return hs
end

local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the operator's first status"
  return hs
end

local generation = obj.metadata.generation
local observed = status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "generation " .. generation .. " not verified yet (status describes " .. tostring(observed) .. ")"
  return hs
end

local because = status.phase
if status.conditions ~= nil then
  for _, condition in ipairs(status.conditions) do
    if condition.type == "Ready" and condition.reason ~= nil then
      because = condition.reason
      if condition.message ~= nil and condition.message ~= "" then
        because = because .. ": " .. condition.message
      end
    end
  end
end

if status.phase == "Ready" then
  hs.status = "Healthy"
elseif status.phase == "Failed" then
  hs.status = "Degraded"
elseif status.phase == "Suspended" then
  hs.status = "Suspended"
else
  hs.status = "Progressing"
end
hs.message = because
return hs
