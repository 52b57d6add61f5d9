-- bench/get.lua — wrk script for b6-http: a plain GET of the URL's path (wrk's default request),
-- with the summary written by wrk_report.lua. No response() callback, so wrk does not hand every
-- answer to Lua; answers with status >= 400 are still counted by wrk (errors.status).
dofile(os.getenv("BENCH_DIR") .. "/wrk_report.lua")
