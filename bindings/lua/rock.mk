# Builds the Lua module for luarocks (globeflower-scm-1.rockspec) from the
# source tree, against an installed libglobeflower found with pkg-config.
# luarocks passes LUA_INCDIR, CFLAGS, LIBFLAG and, to install, INST_LIBDIR.
PKG_CONFIG ?= pkg-config
LUA_INCDIR ?= /usr/include/lua5.4
CFLAGS ?= -O2 -fPIC
LIBFLAG ?= -shared
SRC = bindings/lua
GFL_CFLAGS := $(shell $(PKG_CONFIG) --cflags globeflower)
GFL_LIBS := $(shell $(PKG_CONFIG) --libs globeflower)
GFL_VERSION := $(shell $(PKG_CONFIG) --modversion globeflower)
# Lua version of the headers: 5.1 ... 5.4, or luajit (its headers say 5.1).
LUA_BUILD := $(shell if [ -e "$(LUA_INCDIR)/luajit.h" ]; then echo luajit; else \
	sed -n 's/^\#define LUA_VERSION_NUM[^0-9]*\([0-9]\)0\([0-9]\).*/\1.\2/p' "$(LUA_INCDIR)/lua.h"; fi)
SOURCES = $(filter-out $(SRC)/dispatch.c,$(wildcard $(SRC)/*.c))
CHUNKS = $(SRC)/lua/core.lua $(SRC)/lua/stream.lua $(SRC)/lua/sync.lua $(SRC)/lua/transports.lua $(SRC)/lua/system.lua $(SRC)/lua/fs.lua

all: globeflower.so

rock-build/prelude.h: $(CHUNKS) $(SRC)/embed.sh
	mkdir -p rock-build
	sh $(SRC)/embed.sh $@ $(CHUNKS)

globeflower.so: $(SOURCES) rock-build/prelude.h
	@if [ -z "$(GFL_VERSION)" ]; then echo "rock.mk: libglobeflower not found by pkg-config (set PKG_CONFIG_PATH)" >&2; exit 1; fi
	$(CC) -std=c11 -pthread $(CFLAGS) -D_GNU_SOURCE -DPACKAGE_VERSION='"$(GFL_VERSION)"' \
	  -DGFL_LUA_BUILD='"$(LUA_BUILD)"' -I$(SRC) -Irock-build -I$(LUA_INCDIR) $(GFL_CFLAGS) \
	  $(LIBFLAG) -o $@ $(SOURCES) $(GFL_LIBS) -ldl -lm

install: globeflower.so
	mkdir -p $(INST_LIBDIR)
	cp globeflower.so $(INST_LIBDIR)/

.PHONY: all install
