/* critest's "nonewprivs" image stand-in (scripts/critest.sh): installed set-user-ID root, it
 * prints the effective uid it runs with. Started as uid 1000, that is 0 unless the container's
 * no_new_privs flag kept the set-user-ID bit from taking effect. Built static. */
#include <stdio.h>
#include <unistd.h>

int main(void) {
    printf("Effective uid: %d\n", (int)geteuid());
    return 0;
}
