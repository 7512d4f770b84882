# Sources the benches build, fetched with the registries' own clients and pinned by
# sha256. Sourced by bench scripts; they set $work (their scratch dir, with dl/ and src/).

# crate NAME VERSION SHA256 -> path of the .crate in $work/dl: from cargo's download cache
# when it has it (read only), else `cargo fetch` of a scratch package that depends on it,
# with a CARGO_HOME in the work dir (the user's cargo config copied in, for a mirror).
fetch_crate() {
    local name=$1 ver=$2 sum=$3 out="$work/dl/$1-$2.crate" f home="${CARGO_HOME:-$HOME/.cargo}"
    local scratch="$work/dl/fetch-$1" fetch_home="$work/dl/cargo-home"
    for f in "$home"/registry/cache/*/"$name-$ver.crate"; do
        if [ -f "$f" ] && echo "$sum  $f" | sha256sum -c --status; then
            cp "$f" "$out"; echo "$out"; return 0
        fi
    done
    command -v cargo >/dev/null || { echo "no cargo to fetch the crate $name" >&2; return 1; }
    mkdir -p "$scratch/src" "$fetch_home"
    for f in config.toml config; do [ ! -f "$home/$f" ] || cp "$home/$f" "$fetch_home/$f"; done
    printf '[package]\nname = "fetch-%s"\nversion = "0.0.0"\nedition = "2021"\n\n[dependencies]\n%s = "=%s"\n' \
        "$name" "$name" "$ver" > "$scratch/Cargo.toml"
    : > "$scratch/src/lib.rs"
    (cd "$scratch" && CARGO_HOME="$fetch_home" cargo fetch -q) >&2 || return 1
    for f in "$fetch_home"/registry/cache/*/"$name-$ver.crate"; do
        if [ -f "$f" ] && echo "$sum  $f" | sha256sum -c --status; then
            cp "$f" "$out"; echo "$out"; return 0
        fi
    done
    echo "the crate $name $ver fetched by cargo is not the pinned one (sha256 $sum)" >&2
    return 1
}

# lua_prepare: Lua 5.4.8 from the crate lua-src, unpacked into $work/src with a
# hand-written Makefile (objects and their -MMD -MP dependency files into $(OUT);
# EXTRA_CFLAGS is added); sets $checkout.
lua_prepare() { # sets $checkout
    local crate dir="$work/src/lua-src-548.1.2"
    crate=$(fetch_crate lua-src 548.1.2 bdc4e1aff422ad5f08cffb4719603dcdbc2be2307f4c1510d7aab74b7fa88ca8) || return 1
    tar -xzf "$crate" -C "$work/src" || return 1
    # The hand-written Makefile: objects and their -MMD -MP dependency files into $(OUT).
    cat > "$dir/Makefile" <<'EOF'
OUT ?= build
SRC := lua-5.4.8
CFLAGS := -std=gnu99 -O2 -Wall -Wextra -DLUA_COMPAT_5_3 -DLUA_USE_LINUX -MMD -MP $(EXTRA_CFLAGS)
OBJS := $(patsubst $(SRC)/%.c,$(OUT)/%.o,$(wildcard $(SRC)/*.c))

$(OUT)/liblua.a: $(OBJS)
	$(AR) rcs $@ $^
$(OUT)/%.o: $(SRC)/%.c | $(OUT)
	$(CC) $(CFLAGS) -c $< -o $@
$(OUT):
	mkdir -p $@

-include $(OBJS:.o=.d)
EOF
    checkout=$dir
}
