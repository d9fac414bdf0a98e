#!/bin/sh
# critest's nginx image stand-in (scripts/critest.sh): what critest checks of nginx is that it
# runs as its container's PID 1 with "master process" in its command line (the image starts it
# as `sh /usr/sbin/nginx "master process" ...`), writes /var/run/nginx.pid and serves HTTP on
# port 80; busybox httpd serves /usr/share/nginx/html. SIGTERM stops it (exit 0).
echo $$ > /var/run/nginx.pid
httpd -f -p 80 -h /usr/share/nginx/html &
trap 'kill $! 2>/dev/null; exit 0' TERM INT
wait
