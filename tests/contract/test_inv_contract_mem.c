/* The inventory contract cases (inv_contract_cases.h) against the memory backend. */
#include "tests/contract/inv_contract_cases.h"

const char *inv_contract_url = "memory";

int main(void)
{
    return cmocka_run_group_tests(inv_contract_tests, NULL, NULL);
}
