/* store_impl.h - what storage implementations share with store.c; callers of store.h never
 * see it, so md_store stays opaque to them. */
#ifndef MD_STORE_IMPL_H
#define MD_STORE_IMPL_H

#include "store.h"

/* What every implementation's connection starts with, so that store.c can find the table;
 * implementations embed it as their first member. */
struct md_store {
    const md_store_i *i;
    char err[1024]; /* md_store_error(); "" after success */
};

#endif
