# Release image of the cormorant binary.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bin cormorant

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/cormorant /usr/local/bin/cormorant
WORKDIR /work
ENTRYPOINT []
CMD ["cormorant", "run"]
