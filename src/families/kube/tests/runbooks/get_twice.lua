-- Reads several times, with a pause (token rotation and exec plugin caching).
for i = 1, 3 do
  kube.get("configmap", "db-pool-config")
  sleep(tonumber(params.pause or 0))
end
