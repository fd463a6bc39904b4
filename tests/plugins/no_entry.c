/* A shared object without longmen_plugin_entry: must be refused. */
#include "longmen.h"

LM_EXPORT int not_the_entry_point(void);
LM_EXPORT int not_the_entry_point(void)
{
    return 42;
}
