-- wrk script for the sim server's own ceiling: wrk -t1 -c16 -d5s -s bench/sim/post.lua http://127.0.0.1:8001/v1/chat/completions
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello to the benchmark, please."}]}'
