# berth: a drop-in replacement for registry:2.
#   docker build -t berth .
#   docker run -d -p 5000:5000 -v registry-data:/var/lib/registry berth
#   docker run --rm --entrypoint htpasswd berth -Bbn testuser testpassword > auth/htpasswd
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p berth \
 && install -D -m 0755 target/release/berth /out/usr/local/bin/berth \
 && ln -s berth /out/usr/local/bin/htpasswd

FROM debian:12-slim
COPY --from=build /out/usr/local/bin/ /usr/local/bin/
COPY packaging/config.yml /etc/docker/registry/config.yml
VOLUME ["/var/lib/registry"]
EXPOSE 5000
# io_uring is blocked by Docker's default seccomp profile since Docker 25:
# berth falls back to epoll by itself and logs the driver it uses.
ENTRYPOINT ["/usr/local/bin/berth"]
CMD ["serve", "/etc/docker/registry/config.yml"]
