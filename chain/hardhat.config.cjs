// The local development chain (`npx hardhat node`): no compiler download, no Solidity here:
// the contracts are compiled by build.mjs with the pinned npm solc. Each transaction is mined
// at once; DEX_CHAIN_BLOCK_MS > 0 (deploy/run.sh) also mines an empty block that often, so
// deposits reach their confirmations on an idle chain. Tests mine their own blocks.
module.exports = {
  networks: {
    hardhat: {
      chainId: 31337,
      hardfork: "cancun",
      mining: { auto: true, interval: Number(process.env.DEX_CHAIN_BLOCK_MS || 0) },
    },
  },
};
