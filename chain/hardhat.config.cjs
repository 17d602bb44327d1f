// The local development chain (`npx hardhat node`): no compiler download, no Solidity here:
// the contracts are compiled by build.mjs with the pinned npm solc.
module.exports = {
  networks: {
    hardhat: {
      chainId: 31337,
      hardfork: "cancun",
      mining: { auto: true, interval: 0 },
    },
  },
};
