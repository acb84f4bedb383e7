#!/bin/sh
# whoami for the Docker tests (DESIGN §8), run by busybox httpd as a CGI.
# busybox httpd runs /www/cgi-bin/index.cgi for any URL ending in "/" when no
# index.html exists there, so "/" and "/?sleep=N" land here.
# The answer has the same shape as `portside whoami`, so tests read both alike.
set -f
PATH=/bin

# ?sleep=N (seconds, fractions allowed) delays the whole answer, headers
# included: a stop during the sleep cuts the request before any response byte.
IFS='&'
for pair in $QUERY_STRING; do
	case "$pair" in
	sleep=*)
		seconds=${pair#sleep=}
		case "$seconds" in
		'' | *[!0-9.]*) ;;
		*) sleep "$seconds" ;;
		esac
		;;
	esac
done
unset IFS

printf 'Content-Type: text/plain; charset=utf-8\r\n\r\n'
[ -n "${WHOAMI_NAME:-}" ] && echo "Name: $WHOAMI_NAME"
echo "Hostname: $(hostname)"
# httpd listens dual-stack, so IPv4 peers arrive as [::ffff:a.b.c.d].
addr=${REMOTE_ADDR#\[}
addr=${addr%\]}
case "$addr" in
::ffff:*.*) addr=${addr#::ffff:} ;;
*:*) addr="[$addr]" ;;
esac
echo "RemoteAddr: $addr:$REMOTE_PORT"
echo "$REQUEST_METHOD $REQUEST_URI"
# Request headers, which httpd hands over as HTTP_* variables, turned back
# into "X-Forwarded-For: value" lines.
env | sort | awk '
/^HTTP_/ {
	eq = index($0, "=")
	n = split(substr($0, 6, eq - 6), words, "_")
	name = ""
	for (i = 1; i <= n; i++) {
		w = words[i]
		name = name (i > 1 ? "-" : "") toupper(substr(w, 1, 1)) tolower(substr(w, 2))
	}
	print name ": " substr($0, eq + 1)
}'
