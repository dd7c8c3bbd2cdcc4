#!/bin/bash
# A stand-in web server for the trial (BACKEND=socat): socat accepts on
# port 8000 and runs this once per connection with the socket on stdin and
# stdout. It reads the request head and answers 200 naming itself.
while IFS= read -r line && [[ $line != $'\r' && -n $line ]]; do :; done
printf 'HTTP/1.1 200 OK\r\nX-Served-By: %s\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n' "${SERVER_NAME:-server}"
